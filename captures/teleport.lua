-- teleport.lua: Wireshark/tshark dissector for the data-channel packets of
-- streamlab's Teleport model (docs/teleport.md §3-§4). The signaling
-- (WebSocket over TCP) is decoded by Wireshark's own HTTP, WebSocket and
-- JSON dissectors (`-d tcp.port==8080,http`; this script maps the
-- negotiated subprotocol "teleport-json" to the JSON dissector). Tested
-- with Wireshark/tshark 4.0 (Lua 5.2).
--
-- Load it for one run:
--   tshark -X lua_script:captures/teleport.lua -d udp.port==8081,teleport \
--          -d tcp.port==8080,http -r run.pcapng
--
-- Channel packet (multi-byte fields little-endian):
--   0 u8 magic 0x54 | 1 u8 channel (20, 40, 80, 100, 120) | 2 u8 flags
--   (ACK 0x01, FROM_SERVER 0x02, OPEN 0x04) | 3 reserved | 4 u32 seq |
--   8.. payload (at most 1400 bytes)
-- On channel 100 the payload is a Command (from the server: Shutdown 1,
-- Setup 2 = 171 bytes with idle_connection_timeout u32 @13 and session_id
-- u64 @17, AcknowledgeHandshake 3 = 9 + 8n, acked commands 4/12/15 = 9 +
-- body) or a ClientMessage (from the client: Handshake 1 = 58 + 8n with
-- resourceCount u64 @40, ReceivedResources 3 = 17 + 8n, Acknowledgement
-- 12 = 17 bytes).
--
-- teleport.kind numbers the kinds in the order of the classifier's kind
-- list (src/teleport/src/sut/mod.rs KINDS), from 1. The script registers
-- for decode-as only; malformed packets are expert info (group Malformed)
-- plus teleport.malformed, and the dissector never raises a Lua error.

local tp = Proto("teleport", "Teleport data channel (streamlab)")

local MAGIC, HEADER, MAX_PAYLOAD, MAX_UIDS = 0x54, 8, 1400, 1024
local F_ACK, F_SERVER, F_OPEN = 0x01, 0x02, 0x04

local KINDS = {
  "CHANNEL_OPEN", "CHANNEL_OPEN_ACK", "CHANNEL_ACK", "VIDEO", "VIDEO_TAGS", "GEOMETRY",
  "UNRELIABLE", "RELIABLE", "SETUP", "HANDSHAKE", "ACK_HANDSHAKE", "SHUTDOWN",
  "RECONFIGURE_VIDEO", "SETUP_LIGHTING", "SETUP_INPUTS", "ACKED_COMMAND", "ACKNOWLEDGEMENT",
  "RECEIVED_RESOURCES", "connect", "connect-response", "offer", "answer", "candidate",
  "disconnect",
}
local kind_names, kind_num = {}, {}
for i, k in ipairs(KINDS) do kind_names[i] = k; kind_num[k] = i end

local channel_names = { [20] = "video", [40] = "video_tags", [80] = "geometry",
  [100] = "reliable", [120] = "unreliable" }

local f = {
  kind = ProtoField.uint8("teleport.kind", "Kind", base.DEC, kind_names),
  magic = ProtoField.uint8("teleport.magic", "Magic", base.HEX),
  channel = ProtoField.uint8("teleport.channel", "Channel", base.DEC, channel_names),
  flags = ProtoField.uint8("teleport.flags", "Flags", base.HEX),
  flag_ack = ProtoField.bool("teleport.flags.ack", "ACK", 8, nil, F_ACK),
  flag_server = ProtoField.bool("teleport.flags.from_server", "FROM_SERVER", 8, nil, F_SERVER),
  flag_open = ProtoField.bool("teleport.flags.open", "OPEN", 8, nil, F_OPEN),
  seq = ProtoField.uint32("teleport.seq", "Seq", base.DEC),
  payload_len = ProtoField.uint32("teleport.payload_len", "Payload length", base.DEC),
  payload = ProtoField.bytes("teleport.payload", "Payload"),
  msg_type = ProtoField.uint8("teleport.type", "Payload type", base.DEC),
  idle = ProtoField.uint32("teleport.setup.idle_connection_timeout", "idle_connection_timeout (ms)", base.DEC),
  session = ProtoField.uint64("teleport.setup.session_id", "session_id", base.DEC),
  count = ProtoField.uint64("teleport.uid_count", "uid count", base.DEC),
  uid = ProtoField.uint64("teleport.uid", "uid", base.DEC),
  ack_id = ProtoField.uint64("teleport.ack_id", "ack_id", base.DEC),
  malformed = ProtoField.bool("teleport.malformed", "Malformed"),
}
tp.fields = {
  f.kind, f.magic, f.channel, f.flags, f.flag_ack, f.flag_server, f.flag_open, f.seq,
  f.payload_len, f.payload, f.msg_type, f.idle, f.session, f.count, f.uid, f.ack_id, f.malformed,
}

local e_malformed = ProtoExpert.new("teleport.malformed.expert", "Malformed Teleport packet",
  expert.group.MALFORMED, expert.severity.ERROR)
tp.experts = { e_malformed }

-- u64 LE at `off` of `p` as a Lua number (counts are small when valid).
local function count_at(p, off)
  return p(off, 8):le_uint64():tonumber()
end

-- Uids n at `base`, counted at `at`: the payload must be base + 8n.
local function uids(p, tree, at, base, what)
  local len = p:len()
  if len < base then return what .. string.format(": %d bytes, expected %d", len, base) end
  local n = count_at(p, at)
  tree:add_le(f.count, p(at, 8))
  if n > MAX_UIDS then return what .. string.format(": %d uids, more than %d", n, MAX_UIDS) end
  if len ~= base + 8 * n then
    return what .. string.format(": %d bytes, expected %d", len, base + 8 * n)
  end
  for i = 0, n - 1 do tree:add_le(f.uid, p(base + 8 * i, 8)) end
  return nil
end

-- The kind of a server-to-client payload, or nil and why not.
local function command(p, tree)
  local len = p:len()
  if len == 0 then return nil, "empty payload" end
  local ty = p(0, 1):uint()
  tree:add(f.msg_type, p(0, 1))
  if ty == 1 then
    if len ~= 1 then return nil, string.format("ShutdownCommand: %d bytes, expected 1", len) end
    return "SHUTDOWN"
  elseif ty == 2 then
    if len ~= 171 then return nil, string.format("SetupCommand: %d bytes, expected 171", len) end
    tree:add_le(f.idle, p(13, 4))
    tree:add_le(f.session, p(17, 8))
    return "SETUP"
  elseif ty == 3 then
    local why = uids(p, tree, 1, 9, "AcknowledgeHandshake")
    if why then return nil, why end
    return "ACK_HANDSHAKE"
  elseif ty == 4 or ty == 12 or ty == 15 then
    if len < 9 or len > 9 + 1024 then
      return nil, string.format("AckedCommand: %d bytes, expected 9", len)
    end
    tree:add_le(f.ack_id, p(1, 8))
    if ty == 4 then return "RECONFIGURE_VIDEO" elseif ty == 12 then return "SETUP_LIGHTING" end
    return "SETUP_INPUTS"
  end
  return nil, string.format("unknown command type %d", ty)
end

-- The kind of a client-to-server payload, or nil and why not.
local function client_message(p, tree)
  local len = p:len()
  if len == 0 then return nil, "empty payload" end
  local ty = p(0, 1):uint()
  tree:add(f.msg_type, p(0, 1))
  if ty == 1 then
    local why = uids(p, tree, 40, 58, "Handshake")
    if why then return nil, why end
    return "HANDSHAKE"
  elseif ty == 12 then
    if len ~= 17 then return nil, string.format("AcknowledgementMessage: %d bytes, expected 17", len) end
    tree:add_le(f.ack_id, p(9, 8))
    return "ACKNOWLEDGEMENT"
  elseif ty == 3 then
    local why = uids(p, tree, 9, 17, "ReceivedResources")
    if why then return nil, why end
    return "RECEIVED_RESOURCES"
  end
  return nil, string.format("unknown client message type %d", ty)
end

local function bad(tree, pinfo, why)
  tree:add(f.malformed, true):set_generated()
  tree:add_proto_expert_info(e_malformed, why)
  pinfo.cols.info = "Teleport malformed: " .. why
end

local function dissect(tvb, pinfo, tree)
  local len = tvb:len()
  pinfo.cols.protocol = "Teleport"
  local t = tree:add(tp, tvb(), "Teleport data channel")
  if len < HEADER then bad(t, pinfo, "shorter than the 8-byte header"); return len end
  t:add(f.magic, tvb(0, 1))
  if tvb(0, 1):uint() ~= MAGIC then bad(t, pinfo, "bad magic"); return len end
  local ch = tvb(1, 1):uint()
  t:add(f.channel, tvb(1, 1))
  if channel_names[ch] == nil then bad(t, pinfo, "unknown channel id"); return len end
  local flags = tvb(2, 1):uint()
  local fi = t:add(f.flags, tvb(2, 1))
  fi:add(f.flag_ack, tvb(2, 1))
  fi:add(f.flag_server, tvb(2, 1))
  fi:add(f.flag_open, tvb(2, 1))
  if bit32.band(flags, 0xf8) ~= 0 then bad(t, pinfo, "unknown flag"); return len end
  if len - HEADER > MAX_PAYLOAD then bad(t, pinfo, "payload too long"); return len end
  t:add_le(f.seq, tvb(4, 4))
  local seq = tvb(4, 4):le_uint()
  t:add(f.payload_len, len - HEADER):set_generated()
  local kind, why
  if bit32.band(flags, F_OPEN) ~= 0 then
    if bit32.band(flags, F_ACK) ~= 0 then kind = "CHANNEL_OPEN_ACK" else kind = "CHANNEL_OPEN" end
  elseif bit32.band(flags, F_ACK) ~= 0 then
    kind = "CHANNEL_ACK"
  elseif ch == 20 then kind = "VIDEO"
  elseif ch == 40 then kind = "VIDEO_TAGS"
  elseif ch == 80 then kind = "GEOMETRY"
  elseif ch == 120 then kind = "UNRELIABLE"
  else
    local p = tvb(HEADER):tvb()
    if len == HEADER then p = ByteArray.new():tvb("empty") end
    if bit32.band(flags, F_SERVER) ~= 0 then kind, why = command(p, t) else kind, why = client_message(p, t) end
    if kind == nil then kind = "RELIABLE" end
  end
  if len > HEADER then t:add(f.payload, tvb(HEADER)) end
  t:add(f.kind, kind_num[kind]):set_generated()
  t:append_text(", " .. kind)
  local dir = "C->S"
  if bit32.band(flags, F_SERVER) ~= 0 then dir = "S->C" end
  pinfo.cols.info = string.format("%s %s ch=%d seq=%d len=%d", kind, dir, ch, seq, len - HEADER)
  if why ~= nil then bad(t, pinfo, why) end
  return len
end

function tp.dissector(tvb, pinfo, tree)
  local ok, res = pcall(dissect, tvb, pinfo, tree)
  if not ok then
    local t = tree:add(tp, tvb(), "Teleport data channel")
    bad(t, pinfo, "dissector error: " .. tostring(res))
    return tvb:len()
  end
  return res
end

-- Decode-as only: no port is claimed.
DissectorTable.get("udp.port"):add_for_decode_as(tp)

-- The signaling WebSocket negotiates the subprotocol "teleport-json": its
-- text frames go to Wireshark's own JSON dissector.
local json = Dissector.get("json")
if json ~= nil then
  DissectorTable.get("ws.protocol"):add("teleport-json", json)
end
