"""The `vae` command line: thin commands over the vaesdk API."""
