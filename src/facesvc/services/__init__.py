"""Use cases: users, enrolment, recognition and face analysis. No HTTP in here."""
