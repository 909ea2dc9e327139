"""`python -m tnt_cli` (also what torchrun runs)."""

from tnt_cli.cli.app import main

if __name__ == "__main__":
    main()
