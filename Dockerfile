# dagrelay worker/client image: the package, its examples, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY executor ./executor
COPY workers ./workers
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["dagrelay", "--help"]
