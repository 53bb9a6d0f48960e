"""A tiny Unity ML-Agents player for the tests: the Unity side of the real gRPC protocol.

Launched by ``mlagents_envs.UnityEnvironment`` through a wrapper script (as a built player is,
with ``--mlagents-port N`` and, without graphics, ``-nographics -batchmode``), or by a test as
the Editor. It connects to 127.0.0.1, calls ``Exchange`` in a loop (initialisation is the
first) with every call bounded by ``--timeout``, and exits when Python sends the shutdown
status.

The scene: behaviour ``Ball?team=0`` with two agents (ids 0 and 1). Each has a position that
the action moves (continuous: +a; discrete branches (3, 2): +0.5 * (b0 - 1)); vector
observation [position, steps in episode, last action sum]; reward = position after the move.
Agent 0 terminates when its position reaches 2 (its next episode's first step is sent in the
same message) and is interrupted after ``--max-steps`` steps (next first step one Unity step
later). Agent 1 ends an episode every 2 steps, in the middle of agent 0's. ``--visual`` adds
an 8x8 RGB PNG observation; ``--second-behavior`` adds a behaviour ``Other?team=0``.
Events go as JSON lines to ``$WORLDZOO_UNITY_LOG`` when set.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import uuid

import grpc
import numpy as np
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.brain_parameters_pb2 import (
    ActionSpecProto,
    BrainParametersProto,
)
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.observation_pb2 import PNG, ObservationProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
    UnityRLInitializationOutputProto,
)
from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
    UnityToExternalProtoStub,
)

BEHAVIOR, OTHER = "Ball?team=0", "Other?team=0"
ENGINE_CHANNEL = "e951342c-4f7e-11ea-b238-784f4387d1f7"
TIME_SCALE = 2


def log(**event) -> None:
    path = os.environ.get("WORLDZOO_UNITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


class Scene:
    def __init__(self, args):
        self.args = args
        self.pos, self.t, self.last = np.zeros(2), np.zeros(2, int), np.zeros(2)
        self.pending: list[int] = []  # agents whose first step comes one Unity step later
        self.order: list[int] = []  # agents that asked for a decision, in the order sent

    def observations(self, agent: int) -> list[ObservationProto]:
        vec = ObservationProto(shape=[3])
        vec.float_data.data.extend([self.pos[agent], float(self.t[agent]), self.last[agent]])
        obs = [vec]
        if self.args.visual:
            from PIL import Image
            level = int(np.clip(100 + 50 * self.pos[agent], 0, 255))
            pixels = np.zeros((8, 8, 3), np.uint8)
            pixels[:, : 1 + int(self.t[agent]) % 8] = (level, 255 - level, 40)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            obs.append(ObservationProto(shape=[8, 8, 3], compression_type=PNG,
                                        compressed_data=buf.getvalue()))
        return obs

    def info(self, agent: int, reward: float = 0.0, done: bool = False,
             interrupted: bool = False) -> AgentInfoProto:
        return AgentInfoProto(id=agent, reward=reward, done=done, max_step_reached=interrupted,
                              observations=self.observations(agent))

    def begin(self, agent: int) -> None:
        self.pos[agent], self.t[agent], self.last[agent] = 0.0, 0, 0.0

    def reset(self) -> list[AgentInfoProto]:
        self.pending = []
        for agent in (0, 1):
            self.begin(agent)
        return [self.info(0), self.info(1)]

    def step(self, actions) -> list[AgentInfoProto]:
        infos = []
        deciding = list(self.order)
        for agent in self.pending:  # their new episode's first step
            self.begin(agent)
            infos.append(self.info(agent))
        self.pending = []
        for agent, action in zip(deciding, actions):
            if self.args.actions == "continuous":
                move = float(sum(action.continuous_actions))
            else:
                move = 0.5 * (action.discrete_actions[0] - 1)
            self.last[agent] = (sum(action.continuous_actions) if self.args.actions ==
                                "continuous" else sum(action.discrete_actions))
            self.pos[agent] += move
            self.t[agent] += 1
            reward = float(self.pos[agent])
            if agent == 0 and self.pos[0] >= 2.0:  # terminal, next episode in the same message
                infos.append(self.info(0, reward, done=True))
                self.begin(0)
                infos.append(self.info(0))
            elif agent == 0 and self.t[0] >= self.args.max_steps:  # interrupted
                infos.append(self.info(0, reward, done=True, interrupted=True))
                self.pending.append(0)
            elif agent == 1 and self.t[1] >= 2:
                infos.append(self.info(1, reward, done=True))
                self.begin(1)
                infos.append(self.info(1))
            else:
                infos.append(self.info(agent, reward))
        return infos


def output(scene: Scene, infos, init: bool = False) -> UnityOutputProto:
    rl = UnityRLOutputProto()
    rl.agentInfos[BEHAVIOR].value.extend(infos)
    scene.order = [i.id for i in infos if not i.done]
    if scene.args.second_behavior:
        rl.agentInfos[OTHER].value.extend([scene.info(0)])
    out = UnityOutputProto(rl_output=rl)
    if init:
        if scene.args.actions == "continuous":
            spec = ActionSpecProto(num_continuous_actions=1)
        else:
            spec = ActionSpecProto(num_discrete_actions=2, discrete_branch_sizes=[3, 2])
        brains = [BrainParametersProto(brain_name=BEHAVIOR, is_training=True, action_spec=spec)]
        if scene.args.second_behavior:
            brains.append(BrainParametersProto(brain_name=OTHER, is_training=True,
                                               action_spec=spec))
        caps = UnityRLCapabilitiesProto(baseRLCapabilities=True, concatenatedPngObservations=True,
                                        compressedChannelMapping=True, hybridActions=True,
                                        trainingAnalytics=True, variableLengthObservation=True,
                                        multiAgentGroups=True)
        out.rl_initialization_output.CopyFrom(UnityRLInitializationOutputProto(
            name="FakePlayer", communication_version="1.5.0", package_version="2.0.0",
            brain_parameters=brains, capabilities=caps))
    return out


def side_channel_time_scale(data: bytes) -> float | None:
    """The time scale set through the engine configuration side channel, if any."""
    found, offset = None, 0
    while offset + 20 <= len(data):
        channel = data[offset:offset + 16]
        (length,) = struct.unpack_from("<i", data, offset + 16)
        body = data[offset + 20:offset + 20 + length]
        offset += 20 + length
        if uuid.UUID(bytes_le=channel) == uuid.UUID(ENGINE_CHANNEL) and len(body) >= 8:
            kind, value = struct.unpack_from("<if", body)
            if kind == TIME_SCALE:
                found = value
    return found


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mlagents-port", type=int, required=True)
    p.add_argument("--actions", choices=("continuous", "discrete"), default="continuous")
    p.add_argument("--visual", action="store_true")
    p.add_argument("--second-behavior", action="store_true")
    p.add_argument("--max-steps", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0)
    args, unknown = p.parse_known_args()
    log(event="start", argv=sys.argv[1:], unknown=unknown)
    scene = Scene(args)
    channel = grpc.insecure_channel(f"127.0.0.1:{args.mlagents_port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=args.timeout)
        stub = UnityToExternalProtoStub(channel)
        ok = HeaderProto(status=200)
        reply = stub.Exchange(UnityMessageProto(header=ok, unity_output=output(
            scene, scene.reset(), init=True)), timeout=args.timeout)
        log(event="init", seed=reply.unity_input.rl_initialization_input.seed)
        out = UnityOutputProto()
        while True:
            msg = stub.Exchange(UnityMessageProto(header=ok, unity_output=out),
                                timeout=args.timeout)
            if msg.header.status != 200:
                log(event="close", status=msg.header.status)
                return 0
            rl_in = msg.unity_input.rl_input
            scale = side_channel_time_scale(rl_in.side_channel)
            if scale is not None:
                log(event="time_scale", value=scale)
            if rl_in.command == RESET:
                log(event="reset")
                out = output(scene, scene.reset())
            elif rl_in.command == STEP:
                actions = list(rl_in.agent_actions[BEHAVIOR].value)
                log(event="step", actions=[list(a.continuous_actions) + list(a.discrete_actions)
                                           for a in actions])
                out = output(scene, scene.step(actions))
            elif rl_in.command == QUIT:
                log(event="quit")
                return 0
    except grpc.RpcError as err:
        log(event="rpc_error", code=str(err.code()))
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
