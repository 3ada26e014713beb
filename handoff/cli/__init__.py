"""The ``handoff`` command line: ``serve``, ``agents``, ``train``, ``export``, ``review``,
``report`` (see ``handoff --help``)."""
