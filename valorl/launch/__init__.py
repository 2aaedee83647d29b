"""What a `valorl train` command line means: its flags (one per agent hyperparameter, see
`args.py`) and the training call they make (`train.py`). The CLI and the sweep both launch runs
through it, so a sweep's group is exactly the run its command line would make."""
