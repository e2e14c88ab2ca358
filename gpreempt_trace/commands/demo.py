from ..cli import not_built

command = not_built("demo", "lands with the recorder and experiment 1")
