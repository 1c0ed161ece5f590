"""People's judgements of the run's outputs: a preference and deception study served as a web page (``nst judge``).

:mod:`.study` builds the study and schedules its questions (pure), :mod:`.storage` keeps voters, questions and votes
in a SQL database, :mod:`.server` is the web app, :mod:`.commands` the ``nst judge serve | export`` command line.
The analysis of the exported votes is :mod:`evaluation.people`.
"""
