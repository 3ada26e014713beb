"""Custom Rasa graph components (referenced in configs by module path, e.g.
``bot.components.sentence_encoder_featurizer.SentenceEncoderFeaturizer``)."""
