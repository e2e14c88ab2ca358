from ..cli import not_built

command = not_built("snapshot", "experiment 1 issue")
