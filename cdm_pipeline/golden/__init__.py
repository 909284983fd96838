"""Stage 5: golden records (survivorship with lineage) and the customer 360."""
