"""`python -m worker.cli ...`: how `run` starts its inference process, and the benchmarks their files."""

from worker.cli import main

if __name__ == "__main__":
    main()
