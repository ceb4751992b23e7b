from avcc_stream.cli import entry

entry()
