// RFC 8693 token exchange through oauth4webapi's generic token endpoint request, as the actor SFM:
// private_key_jwt, DPoP with the server-nonce retry, and the result checked with jose.
// Env: ISSUER, CLIENT_ID, CLIENT_JWK, SUBJECT_TOKEN.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const issuer = new URL(process.env.ISSUER)
const insecure = { [oauth.allowInsecureRequests]: true }
const jwk = JSON.parse(process.env.CLIENT_JWK)
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure))
if (!as.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:token-exchange')) throw new Error('discovery lacks token exchange')
const client = { client_id: process.env.CLIENT_ID }
const clientAuth = oauth.PrivateKeyJwt({ key: await jose.importJWK(jwk, jwk.alg), kid: jwk.kid })
const keyPair = await oauth.generateKeyPair('ES256')
const DPoP = oauth.DPoP(client, keyPair)
const params = new URLSearchParams({
  subject_token: process.env.SUBJECT_TOKEN,
  subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
  scope: 'nhn:reseptformidleren/rf',
})
const grant = 'urn:ietf:params:oauth:grant-type:token-exchange'
async function request() {
  const response = await oauth.genericTokenEndpointRequest(as, client, clientAuth, grant, params, { ...insecure, DPoP })
  return oauth.processGenericTokenEndpointResponse(as, client, response)
}
let result
try {
  result = await request()
} catch (err) {
  if (!oauth.isDPoPNonceError(err)) throw err
  result = await request()
}
if (result.issued_token_type !== 'urn:ietf:params:oauth:token-type:access_token') throw new Error('issued_token_type')
const { payload } = await jose.jwtVerify(result.access_token, jose.createRemoteJWKSet(new URL(as.jwks_uri)), {
  issuer: as.issuer, audience: 'nhn:reseptformidleren', typ: 'at+jwt',
})
if (payload.act?.client_id !== 'sfm') throw new Error('act')
if (payload['helseid://claims/client/original_client_id'] !== 'ehr') throw new Error('original_client_id')
const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))
if (payload.cnf?.jkt !== jkt) throw new Error('cnf.jkt')
console.log(`verified exchanged token for ${payload.aud}, person ${payload['helseid://claims/identity/pid']}`)
