"""UIG task functions: plain, typed, Airflow-free entry points called by DAGs and the CLI."""
