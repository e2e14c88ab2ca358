from ..cli import not_built

command = not_built("report", "planned")
