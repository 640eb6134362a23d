// Module ApiaryClient.
