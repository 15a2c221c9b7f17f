# The Patron image: the `patron` command, installed as a regular (non-editable) package.
#
#   docker build -t patron:local .
#   docker run --rm patron:local --help
#
# Two stages so that the runtime image holds the installed package only, not the source tree.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATRON_DATA_DIR=/var/lib/patron
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels
# A fixed, unprivileged uid; the data directory exists in the image and belongs to it, so a fresh named
# volume mounted there inherits that ownership.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/patron patron \
    && mkdir -p /var/lib/patron \
    && chown patron:patron /var/lib/patron
USER patron
WORKDIR /var/lib/patron
VOLUME ["/var/lib/patron"]
EXPOSE 8088
ENTRYPOINT ["patron"]
CMD ["--help"]
