"""`python -m vaesdk ...` runs the `vae` command line (the same entry point as the `vae` script)."""

from vaesdk.cli.main import main

if __name__ == "__main__":
    main()
