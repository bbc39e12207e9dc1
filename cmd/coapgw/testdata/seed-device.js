#!/usr/bin/env node
// The 2018 CoAP-to-AWS-IoT ingestor's example device, as it sends: node-coap's coap.request with
// a URL and nothing else (so the default method, GET, confirmable), the JSON written into the
// request, the answer printed. Only the gateway's address comes from the command line, and the
// answer's code is printed before its payload. Run with NODE_PATH at node-coap's node_modules.
const coap = require('coap')
const req = coap.request('coap://' + process.argv[2] + '/x-node/xxxx-ssss-1111-2222')

const payload = {
  metric1: Number(process.argv[3] || 7),
  metric2: 19
}

req.write(JSON.stringify(payload))

req.on('response', function (res) {
  process.stdout.write(res.code + ' ')
  res.pipe(process.stdout)
  res.on('end', function () {
    console.log('')
    process.exit(0)
  })
})

req.on('error', function (err) {
  console.error('request failed: ' + err)
  process.exit(1)
})

req.end()
