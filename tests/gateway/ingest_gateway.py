"""What the in-process gateway of ``conftest.gateway`` is set up with."""
KEY = {"X-API-Key": "hostile-corpus-key-0000"}
MAX_MEMBERS, MAX_UNPACKED = 200, 32 * 1024 * 1024
