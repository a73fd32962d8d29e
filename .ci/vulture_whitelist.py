"""Names `vulture` reports as unused that are used, by code it cannot see calling them.

Only true false positives belong here, each with why. Run as in `.ci/run`:
    vulture sidecar clients/python/plangate tests bench scripts .ci/vulture_whitelist.py \
        --exclude "*_pb2*.py"
"""

# ruff: noqa: B018  (each line is an attribute access that tells vulture a name is used)

from vulture.whitelist_utils import Whitelist

# OpenFeature's provider interface: the SDK calls these on PlanGateProvider, and the
# resolve methods must take `default_value` even where the sidecar answers without it.
openfeature = Whitelist()
openfeature.get_metadata
openfeature.initialize
openfeature.resolve_boolean_details
openfeature.resolve_string_details
openfeature.resolve_integer_details
openfeature.resolve_float_details
openfeature.resolve_object_details
openfeature.resolve_boolean_details_async
openfeature.resolve_string_details_async
openfeature.resolve_integer_details_async
openfeature.resolve_float_details_async
openfeature.resolve_object_details_async
openfeature.default_value

# gRPC: servicer methods (flagd's ResolveString, ...) and the interceptor hook are called by
# grpcio through the generated service tables, never by name in our code.
grpc = Whitelist()
grpc.intercept_service
grpc.ResolveString
grpc.ResolveInt
grpc.ResolveFloat
grpc.ResolveObject

# protobuf: setting a field (`value.null_value = NULL_VALUE`, a message's scalar) is the
# write; nothing in our code reads it back.
protobuf = Whitelist()
protobuf.null_value
protobuf.burned_this_period

# http.server (the tests' webhook receiver): methods and attributes the standard library looks up.
http_server = Whitelist()
http_server.do_POST
http_server.log_message
http_server.daemon_threads

# pytest: `pytestmark` marks a whole module; fixtures used through
# `@pytest.mark.usefixtures("...")` are referenced by a string.
pytest = Whitelist()
pytest.pytestmark
pytest.refusal_account

# Selenium: ChromeOptions.binary_location is a property setter, read by the driver.
selenium = Whitelist()
selenium.binary_location

# asyncio calls a protocol's `connection_made` (the 503 answer past the HTTP connection cap),
# and logging reads a record's `exc_text` (cleared so a malformed request logs one line).
asyncio_and_logging = Whitelist()
asyncio_and_logging.connection_made
asyncio_and_logging.exc_text
# The console's templates read these (Jinja2, not Python, names them).
console = Whitelist()
console.can_act
