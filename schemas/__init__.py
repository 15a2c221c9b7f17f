"""The Avro event catalogue (``avro/*.avsc``) and the schema registry clients."""
