"""The HTTP/2 and gRPC machinery shared by the server and the client."""
