"""Layer 2, latent and likelihood maths (numpy only): the pixel likelihoods and bounds
(`likelihood`), posteriors, seeded streams and latent checks (`latent`), the priors
(`priors`), and the anomaly score's maths and calibration (`anomaly`)."""
