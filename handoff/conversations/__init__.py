"""Carrying out the routing state machine: the conversation service, and what an account
change does to the conversations and sockets it holds."""
