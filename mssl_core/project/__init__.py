"""The labeling projects behind the app: the store of files and decisions, upload ingestion,
review order, exports, 2-D maps and user accounts."""
