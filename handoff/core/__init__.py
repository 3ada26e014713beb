"""The pure core: who answers a conversation (routing), when it goes to a person (triggers),
the end-user wire format (protocol) and the error root. No I/O, no clock, no Rasa; imports
nothing else of the project but :mod:`handoff.settings`."""
