"""The Rasa assistant: config, domain and (later) custom NLU components."""
