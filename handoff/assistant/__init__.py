"""Everything that imports Rasa: loading and running a trained model, Rasa's tracker store,
training, and Rasa's own HTTP API."""
