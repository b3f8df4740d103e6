"""`python -m vaesdk ...` runs the `vae` command line (the same entry point as the `vae` script)."""

try:
    from vaesdk.cli.main import main
except ModuleNotFoundError as e:
    if e.name != "vaesdk.cli":
        raise
    from vaesdk.requirements import missing_part

    raise SystemExit(f"vae: error: {missing_part('cli')}") from None

if __name__ == "__main__":
    main()
