"""One small script per DVC stage; each is run as `python -m stages.<name>` (see dvc.yaml).

Python imports this package before the stage's script, and the script's imports (torch, above
all) take seconds: a SIGTERM in that time ends the stage with the same one line as at any
later moment, not silently. Nothing else imports this package.
"""

from scratchgpt.errors import stop_in_one_line

stop_in_one_line()
