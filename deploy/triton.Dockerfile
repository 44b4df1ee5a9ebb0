# Triton with the ONNX Runtime that the next_item Python-backend model imports, installed at build
# time from a pinned version: a container starts without reaching PyPI (compose's internal
# network has no route out; Kubernetes runs it with a read-only root filesystem and egress denied),
# and an image scan sees exactly what will run. Build from deploy/:
#   docker build -f deploy/triton.Dockerfile -t shopguide-triton:0.1.0 deploy
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
ARG ONNXRUNTIME=onnxruntime-gpu==1.20.1
RUN pip install --no-cache-dir "${ONNXRUNTIME}" \
    && python3 -c "import onnxruntime"
# The image's own unprivileged user (Kubernetes sets its own uid; either way not root).
USER 1000
