"""``python -m symtool``."""

from symtool.cli import main

if __name__ == "__main__":
    main()
