"""The pure core: who answers a conversation (routing), when it goes to a person (triggers),
the wire format (protocol, over the safe JSON decoder of safe_json), what users are told
(notices) and the error root (errors). No I/O, no clock, no Rasa; imports nothing else of the
project."""
