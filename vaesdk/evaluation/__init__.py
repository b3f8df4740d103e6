"""Layer 7, evaluation: `vae eval`'s figures (`evaluate`), its data sets (`datasets`,
`ood_sets`) and the linear probe (`probe`). `import vaesdk` does not import this layer;
`vaesdk.evaluate_dataset` loads it on first use."""
