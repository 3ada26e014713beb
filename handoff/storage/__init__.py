"""Our persistent state: the schema and its Alembic migrations, the async repositories for
conversations (:mod:`.store`) and for the learning loop (:mod:`.learning_store`)."""
