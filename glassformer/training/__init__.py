"""The Trainer and the tasks it trains (language models, translation), with runs, budgets and torchrun."""
