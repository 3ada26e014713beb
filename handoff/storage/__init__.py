"""Our persistent state: the schema and its Alembic migrations, the records it holds
(:mod:`.records`), the async repositories for conversations and accounts (:mod:`.store`,
:mod:`.accounts`) and for the learning loop (:mod:`.learning_store`)."""
