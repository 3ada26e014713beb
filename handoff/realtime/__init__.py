"""Live fan-out between connections and processes: the event hub (in-process or Redis),
agent presence, per-conversation locks and the agent sockets open on this process."""
