"""The test suite: a package, so test files import their support modules by full name
(`from tests.tiny import ...`, `from tests.toy import ...`)."""
