"""The learning loop: what a handoff teaches (candidates), review and verification,
export to Rasa training data, evaluation, retraining and promotion, and the metrics."""
