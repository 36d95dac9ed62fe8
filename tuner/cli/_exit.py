"""The exit statuses of every ``tuner`` command (documented in the README and tested).

0    a recommendation (every SLO met by the chosen configuration)
2    usage or study-file error (nothing ran)
3    no configuration meets the SLOs (the loud refusal)
4    trials failed: no trial produced a measurement (backend broken)
130  interrupted (Ctrl-C or SIGTERM); what finished is kept
"""

OK = 0
USAGE = 2
INFEASIBLE = 3
FAILED = 4
INTERRUPTED = 130
