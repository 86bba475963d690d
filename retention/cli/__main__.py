"""``python -m retention.cli``: the same command line as the ``retention`` script."""

from retention.cli import main

if __name__ == "__main__":
    main()
