from ..cli import not_built

command = not_built("exp01", "experiment 1 issue")
