from ..cli import not_built

command = not_built("record", "recorder issue")
