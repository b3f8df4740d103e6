"""Layer 6, batch jobs: embed and score jobs in blocks (`blocks`), resumable in shards
(`shards`), on Ray (`ray`), and `vaesdk.run_job`, which picks one (`runner`)."""
