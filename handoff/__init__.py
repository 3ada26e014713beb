"""Live human handoff for a Rasa assistant: server, routing, storage, learning loop."""
