// DPoP (RFC 9449) through oauth4webapi: client_credentials with private_key_jwt and a DPoP
// proof, the server-nonce retry, and the binding checked with jose. Env: ISSUER, CLIENT_ID,
// CLIENT_JWK, SCOPE.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const issuer = new URL(process.env.ISSUER)
const insecure = { [oauth.allowInsecureRequests]: true }
const jwk = JSON.parse(process.env.CLIENT_JWK)
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure))
if (!as.dpop_signing_alg_values_supported?.includes('ES256')) throw new Error('no DPoP algs in discovery')
const client = { client_id: process.env.CLIENT_ID }
const clientAuth = oauth.PrivateKeyJwt({ key: await jose.importJWK(jwk, jwk.alg), kid: jwk.kid })

const keyPair = await oauth.generateKeyPair('ES256')
const DPoP = oauth.DPoP(client, keyPair)
const params = new URLSearchParams({ scope: process.env.SCOPE })

let nonceRetries = 0
async function request() {
  const response = await oauth.clientCredentialsGrantRequest(as, client, clientAuth, params, { ...insecure, DPoP })
  return oauth.processClientCredentialsResponse(as, client, response)
}
let result
try {
  result = await request()
} catch (err) {
  if (!oauth.isDPoPNonceError(err)) throw err
  nonceRetries++
  result = await request() // oauth4webapi has cached the DPoP-Nonce from the error answer
}
if (nonceRetries !== 1) throw new Error('expected exactly one use_dpop_nonce round trip')
if (result.token_type.toLowerCase() !== 'dpop') throw new Error(`token_type ${result.token_type}`)

const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
const { payload } = await jose.jwtVerify(result.access_token, jwks, { issuer: as.issuer, typ: 'at+jwt' })
const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))
if (payload.cnf?.jkt !== jkt) throw new Error(`cnf.jkt ${payload.cnf?.jkt} is not ${jkt}`)

// The nonce is now cached: the next request needs no retry.
const again = await request()
if (again.token_type.toLowerCase() !== 'dpop') throw new Error('second request')
console.log(`verified DPoP-bound token, jkt ${jkt}`)
