"""The real-time voice agent: components/, server/, engines/, client/, bench/ (see README.md)."""
