"""Running a plan: the runner, resume and rerun, the host monitor, and the backends that
execute one run each (docker, local)."""
