"""Stage 6: governance. Consent is built with the mart; here: erasure with suppression, subject
access exports, retention, pseudonymised analytics and the analyst database."""
