"""One loaded model shared by many threads gives exactly the sequential results."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import vaesdk


def test_threads_reproduce_sequential_results(tiny_vae_bundle, fashion_test):
    m = vaesdk.load(tiny_vae_bundle, device="cpu", batch_size=8)
    images = fashion_test.images[:24]

    def job(i):
        return (
            m.sample(10, seed=i, sample_pixels=True),
            m.edit(images, dim=i % 8, delta=1.5, sample_latent=True, seed=i),
            m.score(images[:6], k=8, seed=i).iw_bpd,
            m.interpolate(images[i], images[i + 1], steps=4),
        )

    sequential = [job(i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(job, range(16)))
    for want, got in zip(sequential, threaded):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)
