"""Stream a mono audio file to /v1/stream in 100 ms messages, no endpointing; print the one final as JSON.

python3 ws_client.py ws://HOST:PORT/v1/stream AUDIO
"""

import asyncio
import json
import sys

import soundfile
import websockets


async def main(url: str, path: str) -> None:
    samples, rate = soundfile.read(path, dtype="int16")  # the file's own samples, so the stream equals the upload
    partials = 0
    async with websockets.connect(url) as socket:
        await socket.send(
            json.dumps({"sample_rate": rate, "encoding": "pcm_s16le", "endpointing": False, "interim_results": True})
        )
        for start in range(0, len(samples), rate // 10):
            await socket.send(samples[start : start + rate // 10].tobytes())
        await socket.send(json.dumps({"type": "eof"}))
        finals = []
        async for message in socket:
            event = json.loads(message)
            partials += event["type"] == "partial"
            if event["type"] == "final":
                finals.append(event)
    if len(finals) != 1:
        sys.exit(f"expected one final without endpointing, got {len(finals)}")
    print(json.dumps({"text": finals[0]["text"], "partials": partials}))


asyncio.run(main(*sys.argv[1:3]))
