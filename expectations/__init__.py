"""Great Expectations suites per OMOP table and the validation gate."""
