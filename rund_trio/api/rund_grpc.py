import purerpc
from . import rund_pb2 as rund__pb2
import google.protobuf.duration_pb2 as google_dot_protobuf_dot_duration__pb2
import google.protobuf.timestamp_pb2 as google_dot_protobuf_dot_timestamp__pb2
import google.protobuf.wrappers_pb2 as google_dot_protobuf_dot_wrappers__pb2


class JobControllerServicer(purerpc.Servicer):
    async def Start(self, input_message):
        raise NotImplementedError()

    async def Stop(self, input_message):
        raise NotImplementedError()

    async def Status(self, input_message):
        raise NotImplementedError()

    async def Log(self, input_message):
        raise NotImplementedError()

    async def List(self, input_message):
        raise NotImplementedError()

    async def Wait(self, input_message):
        raise NotImplementedError()

    async def Remove(self, input_message):
        raise NotImplementedError()

    async def Input(self, input_messages):
        raise NotImplementedError()

    async def Resize(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "rund.JobController"
        )
        service_obj.add_method(
            "Start",
            self.Start,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobStartRequest,
                rund__pb2.JobIdentifier,
            )
        )
        service_obj.add_method(
            "Stop",
            self.Stop,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobStopRequest,
                rund__pb2.JobStatus,
            )
        )
        service_obj.add_method(
            "Status",
            self.Status,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobIdentifier,
                rund__pb2.JobStatus,
            )
        )
        service_obj.add_method(
            "Log",
            self.Log,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                rund__pb2.JobLogRequest,
                rund__pb2.JobLog,
            )
        )
        service_obj.add_method(
            "List",
            self.List,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobListRequest,
                rund__pb2.JobListResponse,
            )
        )
        service_obj.add_method(
            "Wait",
            self.Wait,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobWaitRequest,
                rund__pb2.JobStatus,
            )
        )
        service_obj.add_method(
            "Remove",
            self.Remove,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobRemoveRequest,
                rund__pb2.JobStatus,
            )
        )
        service_obj.add_method(
            "Input",
            self.Input,
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_UNARY,
                rund__pb2.JobInput,
                rund__pb2.JobInputReply,
            )
        )
        service_obj.add_method(
            "Resize",
            self.Resize,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobResizeRequest,
                rund__pb2.JobResizeReply,
            )
        )
        return service_obj


class JobControllerStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "rund.JobController",
            channel
        )
        self.Start = self._client.get_method_stub(
            "Start",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobStartRequest,
                rund__pb2.JobIdentifier,
            )
        )
        self.Stop = self._client.get_method_stub(
            "Stop",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobStopRequest,
                rund__pb2.JobStatus,
            )
        )
        self.Status = self._client.get_method_stub(
            "Status",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobIdentifier,
                rund__pb2.JobStatus,
            )
        )
        self.Log = self._client.get_method_stub(
            "Log",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                rund__pb2.JobLogRequest,
                rund__pb2.JobLog,
            )
        )
        self.List = self._client.get_method_stub(
            "List",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobListRequest,
                rund__pb2.JobListResponse,
            )
        )
        self.Wait = self._client.get_method_stub(
            "Wait",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobWaitRequest,
                rund__pb2.JobStatus,
            )
        )
        self.Remove = self._client.get_method_stub(
            "Remove",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobRemoveRequest,
                rund__pb2.JobStatus,
            )
        )
        self.Input = self._client.get_method_stub(
            "Input",
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_UNARY,
                rund__pb2.JobInput,
                rund__pb2.JobInputReply,
            )
        )
        self.Resize = self._client.get_method_stub(
            "Resize",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                rund__pb2.JobResizeRequest,
                rund__pb2.JobResizeReply,
            )
        )